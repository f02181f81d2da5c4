"""Corpus generation: excerpts, codecs, ViSQOL labels, splits and manifests (the schema and the
ViSQOL and alignment code it shares with scoring live in `deepaq`)."""
