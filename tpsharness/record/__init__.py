"""Recording real traffic as scenarios: a recording proxy, a capture importer, the
writer they share, and anonymising. ``python -m tpsharness record`` is its face."""
