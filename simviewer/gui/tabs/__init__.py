"""The window's tabs: each is given the session and the services it needs, never the window."""
