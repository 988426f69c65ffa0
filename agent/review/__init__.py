"""Human review of a run (issue 25): the decisions store, the reader of waiting classes, the web app."""
