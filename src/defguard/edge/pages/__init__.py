"""The Edge's public pages: enrollment, password reset, and a 404 for everything else.

Pages are static HTML; the browser drives each flow with the Edge's own JSON
API (`/static/enroll.js`), so the session cookies, statuses and messages are
exactly those the desktop client gets.
"""

from defguard.edge.pages.views import not_found_page, page_routes

__all__ = ["not_found_page", "page_routes"]
