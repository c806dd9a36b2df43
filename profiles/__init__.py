"""Shipped profiles and the model catalog (package data: assistantd.profiles)."""
