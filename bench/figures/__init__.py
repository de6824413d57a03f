"""One module per figure of issue 6; each has `run(session)` that adds its rows."""
