"""Reads behind the dashboard pages (STYLE 4): aggregates in SQL, a bounded number of queries per page."""
