"""Enrollment, desktop activation and password-reset tokens."""
