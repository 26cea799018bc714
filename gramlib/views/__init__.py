"""The views layer of gramlib (see ``gramlib.LAYERS``)."""
