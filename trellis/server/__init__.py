"""The trellis gRPC server: servicers, configuration, composition root and `trellis serve`."""
