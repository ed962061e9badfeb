"""Serving: a trained model with its vocabulary (encode, score, top-K, reasons, files) and the Spark workers'
batch scoring."""
