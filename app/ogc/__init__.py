"""OGC API Features: collections over PostGIS, CQL2 filters, CRS handling."""
