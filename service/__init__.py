"""The streamrnn daemon and command line (uses the streamrnn library; may import river)."""
