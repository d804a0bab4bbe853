"""Drafts: the one write path of a draft, the web form, uploads."""
