"""Training drafts for a target on text the target writes itself."""
