"""Events out of the kernel into pandas: ring and perf buffers read in bulk
into streams, Parquet sinks (stream.py), and bpf_trace_printk lines
(trace.py)."""
