//! Small, stateless widgets that draw engine data: [`chunk_map`] (the grid
//! and its legend) and [`transport_health`] (one channel's health).
//! Each has `Buffer::with_lines` tests of its exact output.

pub mod chunk_map;
pub mod transport_health;
