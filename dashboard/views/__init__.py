"""HTML pages (STYLE 8): function views, an access decorator first, ``request.htmx`` picks the partial."""
