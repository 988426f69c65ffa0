"""The OpenAI Batch API transport. ``MAX_REQUESTS`` lives here, light, because the run's settings bound
``--batch-max-requests`` by it and the wire format splits batches by it."""

MAX_REQUESTS = 50_000  # the Batch API's limit on requests per input file
