"""Web pages pushgate serves itself: the admin page."""
