"""The web console: static files served at / (service/api/console.py)."""
