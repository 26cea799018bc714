"""The mathematics layer of gramlib (see ``gramlib.LAYERS``)."""
