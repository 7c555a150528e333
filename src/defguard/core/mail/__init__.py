"""Outgoing e-mail: SMTP settings, templates and a queued, retried send job."""
