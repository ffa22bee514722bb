"""Networks: backbones, necks, heads, the SSD assembly and the registry that names each network."""
