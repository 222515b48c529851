"""The HTTP face: the app factory, request dependencies, routes, templates and static files."""
