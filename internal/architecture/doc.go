// Package architecture holds no code: its test checks the shape of the
// module (which packages may import the Graph SDK, and that imports point
// down the layers only).
package architecture
