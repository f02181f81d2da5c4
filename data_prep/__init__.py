"""Corpus generation: excerpts, codecs, alignment, ViSQOL labels, splits and manifests."""
