"""Push to a Kubernetes cluster: render the project's objects, resolve the kubeconfig, apply.

Never imports the emulator, except its code layout helpers."""
