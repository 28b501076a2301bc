//! The registry client: pulls images into the store, pushes cluster images.
