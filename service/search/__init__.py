"""Search: indexes, their documents and queries, behind one door (service.py's SearchService); values.py holds
the typed values that pass through it."""
