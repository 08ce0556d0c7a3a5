//! The config pipe (`proto::ConfigReader`, `vassal::VassalChannel::handle_config_bytes` / `handle_bytes`) on arbitrary chunking: no panic, the same blobs as an independent reader, a valid stream gives back exactly the configs framed: see `emperor_core::fuzzing::config_pipe`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| emperor_core::fuzzing::config_pipe(data));
