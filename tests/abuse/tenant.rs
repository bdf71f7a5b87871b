//! Tenant-level abuse: deploy floods, a flood of output, every limit tripped at once while a
//! healthy tenant is served.
