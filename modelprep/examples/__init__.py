"""Example models trained from data sets that packages ship (nothing is downloaded)."""
