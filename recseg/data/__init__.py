"""Data: footage, chroma key, preprocessing, clip store and temporal loader."""
