"""ImageNet backbones the SSD networks are built on."""
