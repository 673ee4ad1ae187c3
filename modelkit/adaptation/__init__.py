"""Adapting a one-file model to a site from a few labelled images (``leukedge adapt``)."""
