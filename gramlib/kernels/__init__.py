"""The kernels layer of gramlib (see ``gramlib.LAYERS``)."""
