"""The device runtime: load a bundle and score frames or rows. Imports no torch."""
