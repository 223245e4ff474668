"""The disguise task: a translation GAN hides classes behind decoys; a classifier learns them."""
