"""Great Expectations validation: the suites (``suites``), whole-split facts gathered before any
chunk is checked (``split_facts``), per-chunk results merged (``merge``) and their reports."""
