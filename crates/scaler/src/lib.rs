//! KEDA External Scaler (gRPC) and the GPU balancer's actuator.
