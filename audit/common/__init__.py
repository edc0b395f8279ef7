"""Helpers every stage uses: content hashing of records, atomic file writes."""
