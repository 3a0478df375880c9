"""Conversion of upstream checkpoints into odet's state-dict layout."""
