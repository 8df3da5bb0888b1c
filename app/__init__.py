"""Raíces: geospatial targeting of the root causes of migration in Central America."""

__version__ = "0.1.0"
