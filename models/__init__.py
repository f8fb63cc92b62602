"""Models and the loss heads that own them."""
