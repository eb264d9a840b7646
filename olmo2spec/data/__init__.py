"""Data: tokenizers, token files, curation filters, the prepare stage, the mixture loader, the demo corpus.

Used by the runtime and by data commands of the CLI; never by `check`/`explain`/`build`.
"""
