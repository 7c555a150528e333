"""What Core's admin console and the Edge's enrollment pages share: styles, scripts,
templates' macros, QR codes and the cross-site request guard.

Pages are rendered on the server with Jinja2; the small scripts here submit
forms as JSON to the same REST endpoints the API documents, so a form shows
exactly the error the API gives. No third-party front-end code is shipped.
"""
