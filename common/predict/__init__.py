"""One predictor for every detector: media in (`media`), the model's kind of input (`adapters`), files out (`run`)."""
