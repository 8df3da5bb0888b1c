"""HTTP layer: the only package (with app.main) that imports FastAPI."""
