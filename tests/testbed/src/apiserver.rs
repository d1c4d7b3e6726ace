//! A real etcd + kube-apiserver on loopback (being written).
