"""The prediction service: serves the champion model over HTTP and logs every answer."""
