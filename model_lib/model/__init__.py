"""The next-item model: the Keras network, its losses, the training loop over tf.distribute, checkpoints, tuning."""
