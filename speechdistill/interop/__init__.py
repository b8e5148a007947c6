"""Entry points for other toolkits: s3prl's custom upstream (``interop.s3prl``)."""
