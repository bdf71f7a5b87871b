//! Connection-level abuse: slow clients, connection floods, oversized and malformed HTTP/1.1
//! and HTTP/2, rapid reset.
