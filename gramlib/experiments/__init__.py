"""The experiments layer of gramlib (see ``gramlib.LAYERS``)."""
