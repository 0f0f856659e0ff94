"""Making and reading datasets: the ports of Caffe's dataset tools (convert_imageset,
compute_image_mean, extract_features, convert_cifar_data)."""
