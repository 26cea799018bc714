"""The runs layer of gramlib (see ``gramlib.LAYERS``)."""
