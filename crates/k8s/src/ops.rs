//! (being built; its owner replaces this file)
